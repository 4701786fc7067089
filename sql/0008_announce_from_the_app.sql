-- New messages are announced by the process that stored them, after its commit, in batches
-- (chatsvc/announce.py): one NOTIFY per batch of commits rather than a trigger's NOTIFY in every
-- inserting transaction, which cost a send more than the insert itself and serialised commits on
-- PostgreSQL's notification queue lock. Writers other than chatsvc (psql, the importer) announce
-- nothing; each listener's periodic look finds what settled unannounced (docs/ARCHITECTURE.md,
-- "Real-time delivery"). chatsvc_next_message_id stays the id default for those writers.
DROP TRIGGER messages_notify ON messages;
DROP FUNCTION chatsvc_notify_messages();
