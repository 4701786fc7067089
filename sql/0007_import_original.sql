-- Moving in from abatilo/chat (`chatsvc import-original`, chatsvc/importer/).

-- The original told usernames apart case-sensitively: `Alice` and `alice` can both exist there,
-- and both must keep logging in with their exact spelling. Accounts from before the PRECIS rule
-- (legacy_key) may therefore share a key; login and look-up prefer the exact spelling
-- (queries/users.py). Accounts made under the PRECIS rule stay unique by key.
ALTER TABLE users DROP CONSTRAINT users_username_key_unique;
CREATE UNIQUE INDEX users_username_key_unique ON users (username_key) WHERE NOT legacy_key;
CREATE INDEX users_legacy_username_key ON users (username_key) WHERE legacy_key;

-- One row per import: which original database, how far it got (so a stopped import resumes
-- where it stopped), and when it finished.
CREATE TABLE original_imports (
    source          text        PRIMARY KEY,
    started_at      timestamptz NOT NULL DEFAULT now(),
    finished_at     timestamptz,
    last_user_id    bigint      NOT NULL DEFAULT 0,
    last_message_id bigint      NOT NULL DEFAULT 0
);

-- The original's messages that could not be imported, each with the reason, for the operator.
CREATE TABLE original_import_skipped (
    message_id bigint PRIMARY KEY,
    reason     text   NOT NULL
);
