DROP TABLE IF EXISTS taskflow_api_keys;
