"""A local highly available PostgreSQL (Patroni, etcd, HAProxy) and PgBouncer, from deploy/ha/."""
