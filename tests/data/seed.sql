-- The data set host-api's data-connector tests (host-api/tests/data.rs) run
-- against. scripts/postgres.sh loads it as the `runtime` role into
-- `runtime_test`; loading it again resets everything. Deterministic: no
-- random values, no now().

SET client_min_messages = warning;

DROP SCHEMA IF EXISTS analytics CASCADE;
DROP TABLE IF EXISTS orders, customers, type_samples, audit_log CASCADE;
DROP SEQUENCE IF EXISTS invoice_numbers;
DROP FUNCTION IF EXISTS write_something();

CREATE TABLE customers (
    id integer PRIMARY KEY,
    name text NOT NULL,
    email varchar(200) NOT NULL UNIQUE,
    country char(2) NOT NULL,
    created_at timestamptz NOT NULL,
    vip boolean NOT NULL DEFAULT false
);
COMMENT ON TABLE customers IS 'People who ordered something';

INSERT INTO customers (id, name, email, country, created_at, vip) VALUES
    (1, 'Ada Lovelace', 'ada@example.com', 'GB', '2023-01-05T09:30:00Z', true),
    (2, 'Grace Hopper', 'grace@example.com', 'US', '2023-02-11T14:00:00Z', true),
    (3, 'Alan Turing', 'alan@example.com', 'GB', '2023-03-20T08:15:00Z', false),
    (4, 'Zoë Ærøskøbing', 'zoe@example.dk', 'DK', '2023-04-01T12:00:00Z', false),
    (5, '李雷', 'li@example.cn', 'CN', '2023-05-09T03:45:00Z', false),
    (6, 'Conan O''Brien', 'conan@example.ie', 'IE', '2023-06-17T19:20:00Z', false),
    (7, 'Margaret Hamilton', 'margaret@example.com', 'US', '2023-07-04T16:00:00Z', true),
    (8, 'Edsger Dijkstra', 'edsger@example.nl', 'NL', '2023-08-30T10:10:00Z', false),
    (9, 'Barbara Liskov', 'barbara@example.com', 'US', '2023-09-12T11:11:11Z', false),
    (10, 'Donald Knuth', 'don@example.com', 'US', '2023-10-31T23:59:59Z', false);

CREATE TABLE orders (
    id bigint PRIMARY KEY,
    customer_id integer NOT NULL REFERENCES customers (id),
    amount numeric(12, 2) NOT NULL,
    currency char(3) NOT NULL,
    status text NOT NULL,
    ordered_at timestamptz NOT NULL,
    metadata jsonb NOT NULL DEFAULT '{}'
);

-- 200 orders, 20 per customer, spread over 2024.
INSERT INTO orders (id, customer_id, amount, currency, status, ordered_at, metadata)
SELECT g,
       1 + (g % 10),
       round((g * 37.5) % 1000, 2) + 0.99,
       CASE WHEN g % 3 = 0 THEN 'EUR' ELSE 'USD' END,
       (ARRAY['paid', 'shipped', 'refunded'])[1 + g % 3],
       timestamptz '2024-01-01T00:00:00Z' + g * interval '37 hours',
       jsonb_build_object('channel', CASE WHEN g % 2 = 0 THEN 'web' ELSE 'store' END,
                          'items', g % 5 + 1)
FROM generate_series(1, 200) AS g;

-- Writing hidden from a SQL classifier: calling these in a READ ONLY
-- transaction fails on the server (SQLSTATE 25006).
CREATE SEQUENCE invoice_numbers START 1000;

CREATE TABLE audit_log (
    id serial PRIMARY KEY,
    note text NOT NULL
);

CREATE FUNCTION write_something() RETURNS SETOF audit_log
LANGUAGE plpgsql AS $$
BEGIN
    RETURN QUERY INSERT INTO audit_log (note) VALUES ('written by write_something()') RETURNING *;
END
$$;

-- One column of every type the connector maps, and a row of NULLs.
CREATE TABLE type_samples (
    id integer PRIMARY KEY,
    c_int2 smallint,
    c_int4 integer,
    c_int8 bigint,
    c_float4 real,
    c_float8 double precision,
    c_numeric numeric(20, 6),
    c_bool boolean,
    c_text text,
    c_varchar varchar(20),
    c_timestamptz timestamptz,
    c_timestamp timestamp,
    c_date date,
    c_time time,
    c_json json,
    c_jsonb jsonb,
    c_uuid uuid,
    c_bytea bytea,
    c_interval interval,
    c_int_array integer[],
    c_text_array text[]
);

INSERT INTO type_samples VALUES
    (1, 32767, -2147483648, 9223372036854775807, 1.5, 2.25, 12345678901234.123456, true,
     'héllo ✓ "quoted"', 'short', '2024-02-29T12:34:56.789Z', '2024-02-29 12:34:56.789',
     '2024-02-29', '12:34:56', '{"a": [1, 2.5, "x"]}', '{"b": {"c": null}}',
     'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', '\x48690a', '1 day 02:03:04.5', '{1,2,3}',
     '{"a","b c",NULL}'),
    (2, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
     NULL, NULL, NULL, NULL, NULL, NULL),
    (3, -1, 0, -9223372036854775808, 'NaN', '-Infinity', -0.000001, false, '', 'x',
     '1970-01-01T00:00:00Z', '1969-12-31 23:59:59.999999', '0001-01-01', '00:00:00.000001',
     '[]', '"just a string"', '00000000-0000-0000-0000-000000000000', '\x', '-1 mons', '{}',
     '{}');

CREATE SCHEMA analytics;
CREATE VIEW analytics.daily_revenue AS
SELECT ordered_at::date AS day, currency, sum(amount) AS revenue
FROM orders
GROUP BY 1, 2;
