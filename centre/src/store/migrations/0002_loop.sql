-- People and what they did: users, their sessions, each step of the loop
-- on an alert (who and when), and the audit log of every action.

CREATE TABLE users (
    name TEXT PRIMARY KEY,
    -- argon2id, PHC string.
    password_hash TEXT NOT NULL,
    role TEXT NOT NULL,
    -- district[/street[/community]]
    scope TEXT NOT NULL,
    created_at BIGINT NOT NULL
);

-- A session cookie is kept as its sha256 only.
CREATE TABLE sessions (
    token_sha256 TEXT PRIMARY KEY,
    user_name TEXT NOT NULL REFERENCES users (name) ON DELETE CASCADE,
    csrf TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL
);
CREATE INDEX sessions_by_expiry ON sessions (expires_at);

-- Where each alert is in the loop: new, assessed, dispatched, handled,
-- closed; the latest verdict (real, false_alarm) and handler.
ALTER TABLE alerts ADD COLUMN state TEXT NOT NULL DEFAULT 'new';
ALTER TABLE alerts ADD COLUMN verdict TEXT;
ALTER TABLE alerts ADD COLUMN handler TEXT;
-- When the alert first passed a deadline (the centre's supervision).
ALTER TABLE alerts ADD COLUMN late_at BIGINT;
CREATE INDEX alerts_by_state ON alerts (state);

-- Every step taken on an alert, numbered from 1. `command` and
-- `request_id` name what was sent to the agent; its reply is found in
-- `replies` by the request id.
CREATE TABLE alert_steps (
    alert_id TEXT NOT NULL,
    n BIGINT NOT NULL,
    step TEXT NOT NULL,
    by_user TEXT NOT NULL,
    at BIGINT NOT NULL,
    verdict TEXT,
    reason TEXT,
    handler TEXT,
    note TEXT,
    photo TEXT,
    command TEXT,
    request_id TEXT,
    PRIMARY KEY (alert_id, n)
);
CREATE INDEX alert_steps_by_photo ON alert_steps (photo);

CREATE TABLE audit (
    id TEXT PRIMARY KEY,
    at BIGINT NOT NULL,
    user_name TEXT,
    action TEXT NOT NULL,
    target TEXT,
    detail TEXT,
    remote TEXT
);
CREATE INDEX audit_by_time ON audit (at);
