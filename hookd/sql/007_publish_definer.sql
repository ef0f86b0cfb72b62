-- hookd schema, version 7: hookd.publish runs with the rights of its owner (the role that ran
-- `hookd migrate`), so an application role needs only USAGE on the schema and EXECUTE on this
-- function, and no privilege on any table: `hookd migrate --app-role ROLE` grants exactly that.
-- The fixed search_path (pg_temp last) keeps a caller from slipping its own objects or operators
-- into the function (PostgreSQL's "Writing SECURITY DEFINER Functions Safely"); the body names
-- hookd's tables with their schema and uses only pg_catalog besides.
ALTER FUNCTION hookd.publish(text, jsonb, text, text)
    SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp;
