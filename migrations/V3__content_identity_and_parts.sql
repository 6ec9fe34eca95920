-- File identity includes the content, pipelines sharing one database stay apart, and
-- large files commit in parts. See docs/delivery-guarantee.md.
--
-- A file is (pipeline, file_name, content_sha256): the same name with new content is a
-- new file. Rows written before V3 get an empty digest ('\x'), which matches any
-- content of that name (the pre-V3 rule), so an upgrade never reloads a file.

ALTER TABLE sluice_batches ADD COLUMN pipeline text NOT NULL DEFAULT 'default';

ALTER TABLE sluice_files
    ADD COLUMN pipeline          text    NOT NULL DEFAULT 'default',
    ADD COLUMN content_sha256    bytea   NOT NULL DEFAULT '\x',
    ADD COLUMN rows_deduplicated bigint  NOT NULL DEFAULT 0,
    ADD COLUMN duplicate_of      text,
    ADD COLUMN parts             integer NOT NULL DEFAULT 1,
    ADD COLUMN next_offset       bigint,
    ADD COLUMN next_line         bigint;
ALTER TABLE sluice_files DROP CONSTRAINT sluice_files_outcome_check;
ALTER TABLE sluice_files ADD CONSTRAINT sluice_files_outcome_check
    CHECK (outcome IN ('loaded', 'failed', 'redelivered', 'partial'));
ALTER TABLE sluice_files DROP CONSTRAINT sluice_files_pkey;
ALTER TABLE sluice_files ADD PRIMARY KEY (pipeline, file_name, content_sha256);
-- One first delivery per content: a second file with the same bytes is a re-delivery.
CREATE UNIQUE INDEX sluice_files_content_key ON sluice_files (pipeline, content_sha256)
    WHERE duplicate_of IS NULL AND content_sha256 <> '\x';

COMMENT ON TABLE sluice_files IS
    'The ledger: every landing file processed, exactly once per (pipeline, name, content). outcome: loaded; failed (set aside, failure_reason says why); redelivered (same content as duplicate_of, not loaded again); partial (a large file whose first parts committed).';
COMMENT ON COLUMN sluice_files.content_sha256 IS
    'SHA-256 of the file''s bytes; empty for files recorded before migration V3.';
COMMENT ON COLUMN sluice_files.duplicate_of IS
    'For a re-delivery (or a re-delivery loaded on purpose): the name the same content was first recorded under.';
COMMENT ON COLUMN sluice_files.parts IS 'Transactions that committed this file (1 unless it was loaded in parts).';
COMMENT ON COLUMN sluice_files.next_offset IS 'Byte offset where the next part starts (the file size once finished).';
COMMENT ON COLUMN sluice_files.next_line IS 'Line number where the next part starts.';
COMMENT ON COLUMN sluice_files.rows_deduplicated IS 'Rows skipped because their event_id was already stored (dedupe mode).';

ALTER TABLE sluice_claims ADD COLUMN pipeline text NOT NULL DEFAULT 'default';
ALTER TABLE sluice_claims DROP CONSTRAINT sluice_claims_pkey;
ALTER TABLE sluice_claims ADD PRIMARY KEY (pipeline, file_name);

ALTER TABLE quarantine
    ADD COLUMN pipeline      text  NOT NULL DEFAULT 'default',
    ADD COLUMN source_sha256 bytea NOT NULL DEFAULT '\x';
ALTER TABLE quarantine DROP CONSTRAINT quarantine_source_file_line_number_key;
ALTER TABLE quarantine ADD CONSTRAINT quarantine_source_line_key
    UNIQUE (pipeline, source_file, source_sha256, line_number);
COMMENT ON COLUMN quarantine.raw_bytes IS
    'The exact bytes of the row, without its line terminator (from migration V3 on, for every row; before, only for rows that were not valid UTF-8).';
COMMENT ON COLUMN quarantine.raw_line IS
    'The row as text, for reading: decoded as UTF-8 with invalid sequences and NUL bytes replaced by U+FFFD; raw_bytes holds the exact bytes.';
COMMENT ON COLUMN quarantine.pipeline IS 'The pipeline (ledger namespace) whose worker rejected the row.';
COMMENT ON COLUMN quarantine.source_sha256 IS 'SHA-256 of the source file (a reused file name is a different file).';
