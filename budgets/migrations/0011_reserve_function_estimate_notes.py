"""budgets_reserve() also writes what a reservation's estimate was made of (safety factor, tiktoken's
count, the estimate at the requested model): the savings page and the learned factor read them, and
one statement stays one statement (reservations.py)."""

import importlib

from django.db import migrations

_previous = importlib.import_module("budgets.migrations.0003_reserve_function")

CREATE = r"""
CREATE OR REPLACE FUNCTION budgets_reserve(
    p_reservation uuid, p_tenant bigint, p_workflow bigint, p_model bigint, p_environment text,
    p_cost bigint, p_tokens bigint, p_created timestamptz, p_expires timestamptz, p_api_key bigint,
    p_windows bigint[], p_amounts bigint[], p_checked boolean[], p_read bigint[], p_async boolean,
    p_input_estimated boolean, p_estimated_input bigint, p_factor numeric, p_family text, p_requested bigint)
RETURNS TABLE (window_id bigint, spent bigint, reserved bigint, soft_limit bigint, hard_limit bigint)
LANGUAGE plpgsql AS $$
DECLARE
    i integer;
BEGIN
    IF p_async THEN
        PERFORM set_config('synchronous_commit', 'off', true);
    END IF;
    -- The rows first: their foreign-key checks take key-share locks on the windows, which do not
    -- conflict with other preflights' updates, and the hot rows are then locked only from the first
    -- UPDATE below to the commit.
    INSERT INTO budgets_reservation (id, tenant_id, workflow_id, model_id, environment, estimated_cost_nanos,
                                     estimated_tokens, status, created_at, expires_at, api_key_id,
                                     input_count_estimated, estimated_input_tokens, safety_factor,
                                     estimate_family, requested_cost_nanos)
    VALUES (p_reservation, p_tenant, p_workflow, p_model, p_environment, p_cost, p_tokens, 'held',
            p_created, p_expires, p_api_key, p_input_estimated, p_estimated_input, p_factor, p_family,
            p_requested);
    INSERT INTO budgets_reservationhold (reservation_id, window_id, amount)
    SELECT p_reservation, h.window_id, h.amount FROM unnest(p_windows, p_amounts) AS h(window_id, amount);
    -- p_windows arrive in ascending id order: rows are locked in the order ingest uses (no deadlocks).
    FOR i IN 1 .. coalesce(array_length(p_windows, 1), 0) LOOP
        UPDATE budgets_budgetwindow w SET reserved = w.reserved + p_amounts[i]
         WHERE w.id = p_windows[i]
           AND (NOT p_checked[i] OR w.hard_limit >= w.spent + w.reserved + p_amounts[i]);
        IF NOT FOUND THEN
            -- Aborts the statement, so the rows and every hold taken above are undone with it.
            RAISE EXCEPTION 'budget_window_full:%', p_windows[i] USING ERRCODE = 'P0001';
        END IF;
    END LOOP;
    RETURN QUERY
        SELECT w.id, w.spent, w.reserved, w.soft_limit, w.hard_limit FROM budgets_budgetwindow w
         WHERE w.id = ANY(p_windows) OR w.id = ANY(p_read);
END
$$;
"""

DROP = (
    "DROP FUNCTION IF EXISTS budgets_reserve(uuid, bigint, bigint, bigint, text, bigint, bigint, timestamptz, "
    "timestamptz, bigint, bigint[], bigint[], boolean[], bigint[], boolean, boolean, bigint, numeric, text, bigint);"
)


def create(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(_previous.DROP)
        schema_editor.execute(CREATE, params=None)


def restore(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(DROP)
        schema_editor.execute(_previous.CREATE, params=None)


class Migration(migrations.Migration):
    dependencies = [("budgets", "0010_reservation_requested_cost")]

    operations = [migrations.RunPython(create, restore)]
