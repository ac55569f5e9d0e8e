-- The demo production app: a small web shop.
-- Entity tables keep updated_at with a trigger; countries is reference data
-- with no trustworthy timestamp (bulk load); events is an append-only stream.
--
-- Payments: one row per attempt. An order that is paid (or later) has exactly
-- one 'succeeded' row for its order_total, possibly after 'failed' attempts; a
-- bank transfer stays 'pending' until it settles. A returned order keeps its
-- 'succeeded' row and gets a second row with status 'refunded' for the full
-- amount, so net paid = succeeded - refunded.

create type order_status as enum (
    'placed', 'paid', 'shipped', 'delivered', 'cancelled', 'returned'
);

create domain email_address as text check (value like '%_@_%');

create function set_updated_at() returns trigger
language plpgsql as $$
begin
    new.updated_at := now();
    return new;
end;
$$;

create table countries (
    country_code char(2) primary key,
    country_name text not null,
    region text not null
);

create table customers (
    customer_id bigserial primary key,
    email email_address not null unique,
    full_name text not null,
    country_code char(2) not null references countries (country_code),
    is_marketing_opt_in boolean not null default false,
    signed_up_at timestamptz not null,
    created_at timestamptz not null default now(),
    updated_at timestamptz not null default now()
);

create table products (
    product_id bigserial primary key,
    sku text not null unique,
    product_name text not null,
    category text not null,
    unit_price numeric(10, 2) not null check (unit_price >= 0),
    is_active boolean not null default true,
    created_at timestamptz not null default now(),
    updated_at timestamptz not null default now()
);

create table orders (
    order_id bigserial primary key,
    customer_id bigint not null references customers (customer_id) on delete cascade,
    status order_status not null default 'placed',
    order_total numeric(12, 2) not null default 0,
    shipping_country_code char(2) not null references countries (country_code),
    ordered_at timestamptz not null,
    created_at timestamptz not null default now(),
    updated_at timestamptz not null default now()
);

create table order_items (
    order_item_id bigserial primary key,
    order_id bigint not null references orders (order_id) on delete cascade,
    product_id bigint not null references products (product_id),
    quantity integer not null check (quantity > 0),
    unit_price numeric(10, 2) not null check (unit_price >= 0),
    created_at timestamptz not null default now(),
    updated_at timestamptz not null default now()
);

create table payments (
    payment_id bigserial primary key,
    order_id bigint not null references orders (order_id) on delete cascade,
    payment_method text not null
        check (payment_method in ('card', 'paypal', 'gift_card', 'bank_transfer')),
    status text not null
        check (status in ('pending', 'succeeded', 'failed', 'refunded')),
    amount numeric(12, 2) not null check (amount >= 0),
    paid_at timestamptz,
    created_at timestamptz not null default now(),
    updated_at timestamptz not null default now()
);

create table events (
    event_id bigserial primary key,
    session_id uuid not null,
    customer_id bigint,
    event_type text not null
        check (event_type in (
            'page_view', 'search', 'add_to_cart', 'checkout_started', 'login', 'signup'
        )),
    page_path text,
    properties jsonb not null default '{}',
    occurred_at timestamptz not null default now()
);

create index on orders (updated_at);
create index on order_items (updated_at);
create index on order_items (order_id);
create index on payments (updated_at);
create index on payments (order_id);
create index on customers (updated_at);
create index on products (updated_at);
create index on events (occurred_at);
-- For the app's own queries (demo_app.workload): a customer's orders (and the
-- cascade when a customer is deleted), and orders waiting in a given status.
create index on orders (customer_id);
create index on orders (status, order_id);

create trigger customers_updated_at before update on customers
for each row execute function set_updated_at();
create trigger products_updated_at before update on products
for each row execute function set_updated_at();
create trigger orders_updated_at before update on orders
for each row execute function set_updated_at();
create trigger order_items_updated_at before update on order_items
for each row execute function set_updated_at();
create trigger payments_updated_at before update on payments
for each row execute function set_updated_at();
