//! A cluster with what real ones have and what breaks naive backup scripts: roles and
//! memberships, grants, database-level settings and comments, a large object, objects in
//! `postgres` and `template1`, and database names with spaces, quotes, dashes, accents and
//! the full 63 bytes.

use super::PgServer;

/// 63 bytes, the longest name PostgreSQL keeps.
pub const LONG_NAME: &str = "long_database_name_that_uses_every_one_of_the_63_bytes_allowed_";

pub fn nasty_names() -> Vec<&'static str> {
    vec!["my db", "Sales-2025", "O'Brien", "données", LONG_NAME]
}

fn ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

pub fn create(server: &PgServer) {
    assert_eq!(LONG_NAME.len(), 63);
    server.psql(
        "postgres",
        "CREATE ROLE app_owner LOGIN PASSWORD 'app-pw';
         CREATE ROLE readers NOLOGIN;
         CREATE ROLE \"O'Reader\" LOGIN PASSWORD 'r-pw';
         GRANT readers TO \"O'Reader\";
         ALTER ROLE app_owner SET statement_timeout = '5min';
         COMMENT ON ROLE readers IS 'read-only group';",
    );
    for name in nasty_names() {
        server.psql("postgres", &format!("CREATE DATABASE {}", ident(name)));
    }
    server.psql(
        "postgres",
        "ALTER DATABASE \"my db\" OWNER TO app_owner;
         COMMENT ON DATABASE \"my db\" IS 'the app''s database';
         ALTER DATABASE \"Sales-2025\" SET work_mem = '16MB';
         GRANT CONNECT ON DATABASE \"Sales-2025\" TO readers;
         REVOKE CONNECT ON DATABASE \"O'Brien\" FROM PUBLIC;
         ALTER ROLE readers IN DATABASE \"Sales-2025\" SET search_path = sales, public;
         CREATE TABLE public.in_postgres(id int PRIMARY KEY, note text);
         INSERT INTO public.in_postgres VALUES (1, 'kept in postgres'), (2, NULL);",
    );
    server.psql(
        "my db",
        "CREATE SCHEMA app AUTHORIZATION app_owner;
         CREATE TABLE app.items(id serial PRIMARY KEY, name text NOT NULL, data jsonb);
         ALTER TABLE app.items OWNER TO app_owner;
         INSERT INTO app.items(name, data)
           SELECT 'item ' || g, jsonb_build_object('n', g, 'tags', ARRAY['a','b'])
           FROM generate_series(1, 500) g;
         GRANT USAGE ON SCHEMA app TO readers;
         GRANT SELECT ON app.items TO readers;
         COMMENT ON TABLE app.items IS 'things we sell';
         CREATE INDEX items_name ON app.items(name);
         SELECT lo_from_bytea(424242, '\\x6c61726765206f626a656374'::bytea);
         ALTER LARGE OBJECT 424242 OWNER TO app_owner;",
    );
    server.psql(
        "Sales-2025",
        "CREATE SCHEMA sales;
         CREATE TABLE sales.orders(id bigint PRIMARY KEY, customer text, note text);
         INSERT INTO sales.orders VALUES
           (1, 'O''Neil', E'line one\\nline two'),
           (2, 'back\\slash', '-- Name: x; Type: DATABASE; Schema: -; Owner: postgres'),
           (3, 'tab', E'a\\tb'),
           (4, NULL, '\\.');
         CREATE VIEW sales.big_orders AS SELECT * FROM sales.orders WHERE id > 1;
         GRANT SELECT ON sales.big_orders TO readers;",
    );
    server.psql(
        "O'Brien",
        "CREATE FUNCTION public.greet(who text) RETURNS text LANGUAGE sql IMMUTABLE
           AS $$ SELECT 'hello ' || who $$;
         CREATE TABLE public.people(name text);
         INSERT INTO public.people VALUES ('Séamus'), ('Zoë');",
    );
    server.psql(
        "données",
        "CREATE TABLE public.città(nome text, popolazione int);
         INSERT INTO public.città VALUES ('Zürich', 421878), ('Kraków', 779115);",
    );
    server.psql(
        LONG_NAME,
        "CREATE TABLE public.t(x int); INSERT INTO public.t SELECT generate_series(1, 100);",
    );
    // Last, so the databases above were not created from a template1 that has it.
    server.psql(
        "template1",
        "CREATE TABLE public.in_template1(x int); INSERT INTO public.in_template1 VALUES (42);
         COMMENT ON TABLE public.in_template1 IS 'template objects are part of the cluster';",
    );
}

/// Row counts of a few fixture tables, for restore checks.
pub fn row_count(server: &PgServer, db: &str, table: &str) -> i64 {
    server
        .psql(db, &format!("SELECT count(*) FROM {table}"))
        .trim()
        .parse()
        .unwrap()
}
