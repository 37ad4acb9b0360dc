-- wrk script: POST /api/v1/events with an API key (events:write) from $DOCKET_API_KEY.
-- No task listens on the topic, so each request stores an event (and its audit record) only.
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer " .. os.getenv("DOCKET_API_KEY")
wrk.body = '{"topic":"bench.load","payload":{"order":12345,"amount":"99.50","note":"wrk"}}'
