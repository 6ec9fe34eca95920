-- The exactly-once ledger. A file's row here is inserted in the same transaction as
-- the file's rows in `events` and `quarantine`, so a file is either wholly loaded and
-- recorded, or neither. See docs/delivery-guarantee.md.

CREATE TABLE sluice_batches (
    batch_id      uuid PRIMARY KEY,
    worker_id     text        NOT NULL,
    files         integer     NOT NULL,
    rows_loaded   bigint      NOT NULL,
    rows_rejected bigint      NOT NULL,
    rows_deduplicated bigint  NOT NULL DEFAULT 0,
    committed_at  timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE sluice_batches IS
    'One row per committed micro-batch; a worker restarting with an unfinished plan on disk looks its batch_id up here to know whether the batch already committed.';

CREATE TABLE sluice_files (
    file_name     text PRIMARY KEY,
    file_size     bigint      NOT NULL,
    batch_id      uuid        NOT NULL REFERENCES sluice_batches (batch_id) DEFERRABLE INITIALLY DEFERRED,
    worker_id     text        NOT NULL,
    outcome       text        NOT NULL CHECK (outcome IN ('loaded', 'failed')),
    rows_loaded   bigint      NOT NULL,
    rows_rejected bigint      NOT NULL,
    failure_reason  text,
    failure_message text,
    committed_at  timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE sluice_files IS
    'The ledger: every landing file processed, exactly once. outcome=failed means the file could not be read as Sluice CSV and was set aside (failure_reason says why).';
CREATE INDEX sluice_files_batch_idx ON sluice_files (batch_id);

CREATE TABLE sluice_claims (
    file_name  text PRIMARY KEY,
    worker_id  text        NOT NULL,
    claimed_at timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE sluice_claims IS
    'Which worker is working on which file. Claims only spread work; correctness rests on sluice_files. A claim not renewed within the claim timeout is taken over.';
CREATE INDEX sluice_claims_worker_idx ON sluice_claims (worker_id);
