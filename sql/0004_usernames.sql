-- Usernames under PRECIS (RFC 8265) with confusable skeletons (Unicode TR39): chatsvc/usernames.py.
-- Accounts made before keep the key they were made with (NFC, then case-folded), flagged
-- legacy_key, so that each keeps logging in with the exact name it signed up with even where the
-- new rule would refuse or merge it. New accounts get the PRECIS key (legacy_key false).
ALTER TABLE users ADD COLUMN legacy_key boolean NOT NULL DEFAULT true;
ALTER TABLE users ALTER COLUMN legacy_key SET DEFAULT false;

-- The TR39 skeleton of the account's key: two look-alike names have the same one. Unique among new
-- accounts; older accounts may share one (both exist already), and `chatsvc migrate` fills theirs
-- in after this file, since SQL cannot compute a skeleton.
ALTER TABLE users ADD COLUMN username_skeleton text;
CREATE UNIQUE INDEX users_username_skeleton_unique ON users (username_skeleton) WHERE NOT legacy_key;
CREATE INDEX users_legacy_username_skeleton ON users (username_skeleton) WHERE legacy_key;
