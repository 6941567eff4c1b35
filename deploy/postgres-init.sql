-- Parley's application database, on the same PostgreSQL server as Temporal's databases.
-- The postgres image runs this once, when the data volume is first initialised
-- (mounted into /docker-entrypoint-initdb.d by docker-compose.yml). It runs as the
-- superuser from POSTGRES_USER; Temporal's auto-setup creates its own databases.
-- Keep the role, password and database in step with DATABASE_URL in docker-compose.yml.
CREATE ROLE parley WITH LOGIN PASSWORD 'parley';
CREATE DATABASE parley OWNER parley;
