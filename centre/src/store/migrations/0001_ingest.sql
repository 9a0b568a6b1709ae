-- What arrives from the agents. Portable SQL (SQLite and PostgreSQL);
-- times are milliseconds since the Unix epoch, UTC.

-- Every event message as the agent sent it, once per (id, seq).
CREATE TABLE event_messages (
    id TEXT NOT NULL,
    seq BIGINT NOT NULL,
    site TEXT NOT NULL,
    agent TEXT NOT NULL,
    kind TEXT NOT NULL,
    phase TEXT NOT NULL,
    received_at BIGINT NOT NULL,
    payload TEXT NOT NULL,
    PRIMARY KEY (id, seq)
);
CREATE INDEX event_messages_by_agent ON event_messages (site, agent, seq);

-- One row per event: its latest state from the agent (by seq) and, from
-- later migrations, what the centre's people did about it.
CREATE TABLE alerts (
    id TEXT PRIMARY KEY,
    site TEXT NOT NULL,
    district TEXT NOT NULL,
    street TEXT NOT NULL,
    community TEXT NOT NULL,
    agent TEXT NOT NULL,
    camera TEXT NOT NULL,
    camera_name TEXT NOT NULL,
    kind TEXT NOT NULL,
    zone TEXT,
    severity TEXT NOT NULL,
    severity_rank BIGINT NOT NULL,
    phase TEXT NOT NULL,
    last_seq BIGINT NOT NULL,
    started_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    ended_at BIGINT,
    peak_score DOUBLE PRECISION NOT NULL,
    escalated_to TEXT,
    first_received_at BIGINT NOT NULL,
    last_received_at BIGINT NOT NULL
);
CREATE INDEX alerts_by_site ON alerts (district, street, community, started_at);

-- Snapshot JPEGs: the bytes are files named by their sha256 under
-- snapshots.dir; these rows say which event they belong to.
CREATE TABLE snapshots (
    event_id TEXT NOT NULL,
    sha256 TEXT NOT NULL,
    site TEXT NOT NULL,
    agent TEXT NOT NULL,
    bytes BIGINT NOT NULL,
    received_at BIGINT NOT NULL,
    PRIMARY KEY (event_id, sha256)
);
CREATE INDEX snapshots_by_age ON snapshots (received_at);
CREATE INDEX snapshots_by_hash ON snapshots (sha256);

-- The retained statuses, latest per agent and per camera.
CREATE TABLE agents (
    site TEXT NOT NULL,
    agent TEXT NOT NULL,
    state TEXT NOT NULL,
    version TEXT NOT NULL,
    status_at BIGINT NOT NULL,
    received_at BIGINT NOT NULL,
    payload TEXT NOT NULL,
    PRIMARY KEY (site, agent)
);

CREATE TABLE cameras (
    site TEXT NOT NULL,
    agent TEXT NOT NULL,
    camera TEXT NOT NULL,
    name TEXT NOT NULL,
    state TEXT NOT NULL,
    fps DOUBLE PRECISION NOT NULL,
    last_frame_at BIGINT,
    last_error TEXT,
    reconnects BIGINT NOT NULL,
    status_at BIGINT NOT NULL,
    -- Since when the camera has been `failed` without a break (NULL while
    -- it is not), for `camera_offline`.
    failing_since BIGINT,
    received_at BIGINT NOT NULL,
    PRIMARY KEY (site, agent, camera)
);

-- The agents' answers to commands.
CREATE TABLE replies (
    id TEXT PRIMARY KEY,
    site TEXT NOT NULL,
    agent TEXT NOT NULL,
    command TEXT NOT NULL,
    request_id TEXT,
    event_id TEXT,
    by_whom TEXT,
    ok BIGINT NOT NULL,
    error TEXT,
    at BIGINT NOT NULL,
    received_at BIGINT NOT NULL
);
CREATE INDEX replies_by_request ON replies (request_id);
