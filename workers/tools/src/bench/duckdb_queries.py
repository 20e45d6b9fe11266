"""Q1-Q4 in DuckDB on a dataset folder, for `coffee bench` to compare with (issue 15).

usage: python queries.py DATA_DIR OUT.ndjson THREADS

Reads the CSV files, computes the four queries as ../shared/QUERIES.md states them (exact decimals, the same tie
rules), writes NDJSON lines in the pipeline's format, and prints one JSON line on stdout: the seconds from the
first read to the last line written, timed inside the process (interpreter start and the import excluded), the
CPU seconds of the process's threads over the same span, and the lines written. Rows that do not parse are skipped, as the pipeline's client skips malformed rows.
"""

import json
import sys
import time

import duckdb

TRANSACTIONS = {
    "transaction_id": "VARCHAR", "store_id": "INTEGER", "payment_method_id": "VARCHAR", "voucher_id": "VARCHAR",
    "user_id": "DOUBLE", "original_amount": "DECIMAL(18,2)", "discount_applied": "DECIMAL(18,2)",
    "final_amount": "DECIMAL(18,2)", "created_at": "TIMESTAMP",
}
ITEMS = {
    "transaction_id": "VARCHAR", "item_id": "INTEGER", "quantity": "BIGINT", "unit_price": "DECIMAL(18,2)",
    "subtotal": "DECIMAL(18,2)", "created_at": "TIMESTAMP",
}
USERS = {"user_id": "BIGINT", "gender": "VARCHAR", "birthdate": "DATE", "registered_at": "VARCHAR"}
STORES = {
    "store_id": "INTEGER", "store_name": "VARCHAR", "street": "VARCHAR", "postal_code": "VARCHAR", "city": "VARCHAR",
    "state": "VARCHAR", "latitude": "VARCHAR", "longitude": "VARCHAR",
}
MENU = {
    "item_id": "INTEGER", "item_name": "VARCHAR", "category": "VARCHAR", "price": "VARCHAR", "is_seasonal": "VARCHAR",
    "available_from": "VARCHAR", "available_to": "VARCHAR",
}


def csv(data, folder, columns):
    spec = ", ".join(f"'{name}': '{kind}'" for name, kind in columns.items())
    # strict_mode off: files of one folder may end their lines with LF or CRLF (DuckDB takes the first file's
    # dialect for all; per-file sniffing with union_by_name gives the same rows, a third slower).
    return (f"read_csv('{data}/{folder}/*.csv', header = true, columns = {{{spec}}}, ignore_errors = true, "
            f"strict_mode = false, quote = '\"', escape = '\"')")


def main():
    data, out, threads = sys.argv[1], sys.argv[2], int(sys.argv[3])
    db = duckdb.connect()
    db.execute(f"SET threads = {threads}")
    started = time.perf_counter()
    cpu_started = time.process_time()
    # One scan of each fact table, kept to 2024-2025.
    db.execute(f"""CREATE TEMP TABLE t AS
        SELECT transaction_id, store_id, CAST(user_id AS BIGINT) AS user_id, final_amount, created_at,
               CAST(created_at AS TIME) BETWEEN TIME '06:00:00' AND TIME '23:00:00' AS in_hours
        FROM {csv(data, 'transactions', TRANSACTIONS)} WHERE year(created_at) IN (2024, 2025)""")
    q1 = db.execute("SELECT transaction_id, final_amount FROM t WHERE in_hours AND final_amount >= 75").fetchall()
    q2 = db.execute(f"""
        WITH sums AS (
            SELECT strftime(created_at, '%Y-%m') AS month, item_id, sum(quantity) AS qty, sum(subtotal) AS profit
            FROM {csv(data, 'transaction_items', ITEMS)} WHERE year(created_at) IN (2024, 2025)
            GROUP BY ALL),
        ranked AS (
            SELECT *, row_number() OVER (PARTITION BY month ORDER BY qty DESC, item_id) AS by_qty,
                      row_number() OVER (PARTITION BY month ORDER BY profit DESC, item_id) AS by_profit
            FROM sums)
        SELECT r.month, m.item_name, r.qty, r.profit, r.by_qty = 1, r.by_profit = 1
        FROM ranked r JOIN {csv(data, 'menu_items', MENU)} m USING (item_id)
        WHERE r.by_qty = 1 OR r.by_profit = 1""").fetchall()
    q3 = db.execute(f"""
        SELECT year(created_at) || '-H' || CASE WHEN month(created_at) <= 6 THEN 1 ELSE 2 END AS half,
               s.store_name, sum(final_amount)
        FROM t JOIN {csv(data, 'stores', STORES)} s USING (store_id)
        WHERE in_hours GROUP BY ALL""").fetchall()
    q4 = db.execute(f"""
        WITH counts AS (
            SELECT store_id, user_id, count(*) AS purchases FROM t WHERE user_id IS NOT NULL GROUP BY ALL),
        top AS (
            SELECT *, row_number() OVER (PARTITION BY store_id ORDER BY purchases DESC, user_id) AS place
            FROM counts)
        SELECT s.store_name, u.birthdate, top.user_id, top.purchases
        FROM top JOIN {csv(data, 'stores', STORES)} s USING (store_id)
                 LEFT JOIN (SELECT user_id, any_value(birthdate) AS birthdate
                            FROM {csv(data, 'users', USERS)} GROUP BY user_id) u USING (user_id)
        WHERE place <= 3""").fetchall()
    lines = 0
    with open(out, "w", encoding="utf-8") as f:
        def line(fields):
            nonlocal lines
            f.write("{" + ",".join(f'"{k}":{v}' for k, v in fields) + "}\n")
            lines += 1

        text = json.dumps
        for transaction_id, amount in q1:
            line([("query", '"Q1"'), ("transaction_id", text(transaction_id)), ("final_amount", amount)])
        for month, name, qty, profit, best_qty, best_profit in q2:
            if best_qty:
                line([("query", '"Q2_QTY"'), ("year_month_created_at", text(month)), ("item_name", text(name)),
                      ("sellings_qty", qty)])
            if best_profit:
                line([("query", '"Q2_PROFIT"'), ("year_month_created_at", text(month)), ("item_name", text(name)),
                      ("profit_sum", profit)])
        for half, name, tpv in q3:
            line([("query", '"Q3"'), ("year_half_created_at", text(half)), ("store_name", text(name)), ("tpv", tpv)])
        for name, birthdate, user_id, purchases in q4:
            birth = text(birthdate.isoformat()) if birthdate is not None else "null"
            line([("query", '"Q4"'), ("store_name", text(name)), ("birthdate", birth), ("user_id", user_id),
                  ("purchases_qty", purchases)])
    seconds, cpu_seconds = time.perf_counter() - started, time.process_time() - cpu_started
    print(json.dumps({"seconds": seconds, "cpu_seconds": cpu_seconds, "lines": lines, "threads": threads}))


if __name__ == "__main__":
    main()
