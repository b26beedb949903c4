-- request_store v1 (SQLite): one row per finished request.
-- ts: microseconds since the Unix epoch, UTC. cost_e10: USD in units of 1e-10 (integers sum exactly).
-- attempts: JSON [[outcome, upstream status, ms], ...]; phases: JSON {"phase": ms}.
-- seq is the rowid: the tie-breaker of keyset pagination, index entries carry it for free.
CREATE TABLE request_store_requests (
    seq INTEGER PRIMARY KEY,
    ts INTEGER NOT NULL,
    request_id TEXT NOT NULL,
    key_id TEXT,
    model TEXT,
    upstream_model TEXT,
    provider TEXT,
    surface TEXT,
    status INTEGER NOT NULL,
    error_code TEXT,
    cache_status TEXT NOT NULL,
    cache_source TEXT,
    attempt_count INTEGER NOT NULL DEFAULT 0,
    attempts TEXT NOT NULL DEFAULT '[]',
    total_ms REAL NOT NULL,
    upstream_ms REAL,
    ttft_ms REAL,
    phases TEXT NOT NULL DEFAULT '{}',
    prompt_tokens INTEGER,
    completion_tokens INTEGER,
    cached_tokens INTEGER,
    reasoning_tokens INTEGER,
    cost_e10 INTEGER,
    request_body TEXT,
    response_body TEXT,
    bodies_truncated INTEGER NOT NULL DEFAULT 0
);

CREATE INDEX request_store_requests_ts ON request_store_requests (ts);
CREATE INDEX request_store_requests_key_ts ON request_store_requests (key_id, ts);
CREATE INDEX request_store_requests_model_ts ON request_store_requests (model, ts);
CREATE INDEX request_store_requests_request_id ON request_store_requests (request_id);
