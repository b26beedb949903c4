-- request_store v1 (PostgreSQL): one row per finished request, shared by every gateway instance.
-- attempts: JSON [[outcome, upstream status, ms], ...]; phases: JSON {"phase": ms}.
-- seq orders rows inserted within the same microsecond: the tie-breaker of keyset pagination.
CREATE TABLE request_store_requests (
    seq BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    ts TIMESTAMPTZ NOT NULL,
    request_id TEXT NOT NULL,
    key_id TEXT,
    model TEXT,
    upstream_model TEXT,
    provider TEXT,
    surface TEXT,
    status SMALLINT NOT NULL,
    error_code TEXT,
    cache_status TEXT NOT NULL,
    cache_source TEXT,
    attempt_count SMALLINT NOT NULL DEFAULT 0,
    attempts JSONB NOT NULL DEFAULT '[]',
    total_ms DOUBLE PRECISION NOT NULL,
    upstream_ms DOUBLE PRECISION,
    ttft_ms DOUBLE PRECISION,
    phases JSONB NOT NULL DEFAULT '{}',
    prompt_tokens BIGINT,
    completion_tokens BIGINT,
    cached_tokens BIGINT,
    reasoning_tokens BIGINT,
    cost_usd NUMERIC(20, 10),
    request_body TEXT,
    response_body TEXT,
    bodies_truncated BOOLEAN NOT NULL DEFAULT FALSE
);

CREATE INDEX request_store_requests_ts ON request_store_requests (ts, seq);
CREATE INDEX request_store_requests_key_ts ON request_store_requests (key_id, ts, seq);
CREATE INDEX request_store_requests_model_ts ON request_store_requests (model, ts, seq);
CREATE INDEX request_store_requests_request_id ON request_store_requests (request_id);
