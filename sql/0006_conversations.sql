-- Conversations with unread counts and read markers; sessions a user can list and revoke.
-- docs/ARCHITECTURE.md ("Conversations") says why the model is this one.

-- One row per pair of users who exchanged at least one message (low_id = high_id for notes to
-- self), kept by the send statement itself: the newest message id, and for each side its read
-- marker and how many messages from the other side lie above it. One row per pair rather than
-- one per user and peer: a send then updates one row, not two.
CREATE TABLE conversations (
    low_id          bigint NOT NULL REFERENCES users (id),
    high_id         bigint NOT NULL REFERENCES users (id),
    last_message_id bigint NOT NULL,
    -- low_id's read marker, and the messages high_id sent low_id with a larger id.
    low_last_read   bigint,
    low_unread      bigint NOT NULL DEFAULT 0 CHECK (low_unread >= 0),
    -- The same for high_id.
    high_last_read  bigint,
    high_unread     bigint NOT NULL DEFAULT 0 CHECK (high_unread >= 0),
    PRIMARY KEY (low_id, high_id),
    CHECK (low_id <= high_id)
);

-- A user's conversations by recent activity: GET /conversations merges a range scan of each,
-- one for the pairs where the user is the smaller id and one for the pairs where it is the larger.
CREATE INDEX conversations_low_recent ON conversations (low_id, last_message_id);
CREATE INDEX conversations_high_recent ON conversations (high_id, last_message_id);

-- The conversations of the messages stored so far. Nobody has read anything yet: every message
-- from the other side is unread.
INSERT INTO conversations (low_id, high_id, last_message_id, low_unread, high_unread)
SELECT least(sender_id, recipient_id), greatest(sender_id, recipient_id), max(id),
       count(*) FILTER (WHERE sender_id > recipient_id),
       count(*) FILTER (WHERE sender_id < recipient_id)
FROM messages
GROUP BY 1, 2;

-- Sessions get a public identifier (GET /sessions, DELETE /sessions/{id}): random, unrelated to
-- the token, so knowing it lets nobody authenticate. And the User-Agent the login came with.
ALTER TABLE sessions
    ADD COLUMN public_id  uuid NOT NULL DEFAULT gen_random_uuid(),
    ADD COLUMN user_agent text;
CREATE UNIQUE INDEX sessions_public_id ON sessions (public_id);
-- A user's sessions, newest first (GET /sessions, POST /logout/all); replaces (user_id).
CREATE INDEX sessions_user_created ON sessions (user_id, created_at);
DROP INDEX sessions_user_id;
