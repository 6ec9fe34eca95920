-- The destination tables: valid rows go to `events`, rejected rows to `quarantine`.
--
-- `events` deliberately has no primary key or index: COPY into a heap without indexes
-- is the fastest path, and exactly-once delivery rests on the ledger (V2), not on a
-- key. When row-level deduplication is enabled the worker adds a unique index on
-- `event_id` itself (events_event_id_key).

CREATE TABLE events (
    event_id   uuid          NOT NULL,
    event_time timestamptz   NOT NULL,
    user_id    bigint        NOT NULL,
    session_id text          NOT NULL,
    event_type text          NOT NULL
        CONSTRAINT events_event_type_check CHECK (event_type IN ('view', 'add_to_cart', 'purchase')),
    product_id bigint        NOT NULL,
    category   text          NOT NULL,
    price      numeric(10,2) NOT NULL
        CONSTRAINT events_price_check CHECK (price >= 0),
    quantity   integer       NOT NULL
        CONSTRAINT events_quantity_check CHECK (quantity >= 0)
);

COMMENT ON TABLE events IS
    'E-commerce events loaded from landing CSV files, each file exactly once (see sluice_files). No key by default; with deduplication enabled a unique index on event_id also makes each event appear once.';
COMMENT ON COLUMN events.event_id IS
    'Identifier assigned by the producer; unique per event unless the producer sent duplicates.';
COMMENT ON COLUMN events.event_time IS
    'When the event happened, as sent by the producer (RFC 3339 in the CSV, stored in UTC).';
COMMENT ON COLUMN events.user_id IS 'The user who acted; non-negative.';
COMMENT ON COLUMN events.session_id IS 'The user''s session; at most 128 bytes.';
COMMENT ON COLUMN events.event_type IS 'What happened: view, add_to_cart or purchase.';
COMMENT ON COLUMN events.product_id IS 'The product concerned; non-negative.';
COMMENT ON COLUMN events.category IS 'The product''s category; at most 128 bytes.';
COMMENT ON COLUMN events.price IS 'Unit price, exactly as sent (two decimals, never negative).';
COMMENT ON COLUMN events.quantity IS
    'Number of units; 0 allowed only for view events (enforced by the worker, which quarantines violations).';

CREATE TABLE quarantine (
    id             bigserial   PRIMARY KEY,
    source_file    text        NOT NULL,
    line_number    bigint      NOT NULL,
    reason         text        NOT NULL,
    message        text        NOT NULL,
    raw_line       text        NOT NULL,
    raw_bytes      bytea,
    batch_id       uuid,
    quarantined_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT quarantine_source_file_line_number_key UNIQUE (source_file, line_number)
);

COMMENT ON TABLE quarantine IS
    'Rows the worker rejected, one per offending row, with the reason; committed in the same transaction as the file''s valid rows, so no row is dropped silently.';
COMMENT ON COLUMN quarantine.id IS 'Surrogate key, in insertion order.';
COMMENT ON COLUMN quarantine.source_file IS 'Name of the landing file the line came from.';
COMMENT ON COLUMN quarantine.line_number IS
    '1-based line number of the rejected row in source_file; with source_file, identifies the row.';
COMMENT ON COLUMN quarantine.reason IS
    'Stable machine-readable rejection code, e.g. bad_price, unknown_event_type, invalid_utf8 (the same codes label the worker''s metrics).';
COMMENT ON COLUMN quarantine.message IS 'Human-readable explanation of the rejection.';
COMMENT ON COLUMN quarantine.raw_line IS
    'The line as received, without its line terminator; decoded as UTF-8 with invalid sequences replaced by U+FFFD (see raw_bytes).';
COMMENT ON COLUMN quarantine.raw_bytes IS
    'The exact bytes of the line, set only when it is not valid UTF-8 (raw_line is then lossy); NULL otherwise.';
COMMENT ON COLUMN quarantine.batch_id IS
    'The micro-batch that committed this row (sluice_batches.batch_id).';
COMMENT ON COLUMN quarantine.quarantined_at IS 'When the row was committed.';
