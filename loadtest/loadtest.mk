# Load and reliability targets (included by the top-level Makefile; also usable alone:
# `make -f loadtest/loadtest.mk loadtest`). They target a server already running on loopback
# (`make serve` in another terminal). Knobs: USERS, SPAWN_RATE, DURATION (s), HOST, P95_MS,
# USER_CLASS (grpc|http|both), MAX_NEW_TOKENS; ports from GRPC_PORT / HTTP_PORT.
# Every run is bounded: Locust's --run-time, the runner's own deadline, and an outer `timeout`.

LOADTEST_PYTHON     = $(or $(PYTHON),.venv/bin/python)
LOADTEST_HOST       = $(or $(HOST),127.0.0.1)
LOADTEST_GRPC_PORT  = $(or $(GRPC_PORT),8001)
LOADTEST_HTTP_PORT  = $(or $(HTTP_PORT),8000)
LOADTEST_CLASS      = $(or $(USER_CLASS),both)
LOADTEST_OUT        = build/loadtest
LOADTEST_P95        = $(if $(P95_MS),--p95-ms $(P95_MS))
LOADTEST_TOKENS     = $(if $(MAX_NEW_TOKENS),--max-new-tokens $(MAX_NEW_TOKENS))
LOADTEST_COMMON     = --host $(LOADTEST_HOST) --grpc-port $(LOADTEST_GRPC_PORT) --http-port $(LOADTEST_HTTP_PORT) \
                      --user-class $(LOADTEST_CLASS) --out $(LOADTEST_OUT) $(LOADTEST_P95) $(LOADTEST_TOKENS)
# loadtest: a few users for a minute; soak: saturating (16 users, no pause) for 10 minutes.
LOADTEST_USERS      = $(or $(USERS),4)
LOADTEST_RATE       = $(or $(SPAWN_RATE),2)
LOADTEST_DURATION   = $(or $(DURATION),60)
LOADTEST_SOAK_USERS = $(or $(USERS),16)
LOADTEST_SOAK_RATE  = $(or $(SPAWN_RATE),4)
LOADTEST_SOAK_TIME  = $(or $(DURATION),600)
# Outer bound: the run time plus start-up, the last requests' timeout and shutdown.
LOADTEST_TIMEOUT    = timeout --kill-after=15

.PHONY: loadtest loadtest-ui soak overload

loadtest:  ## headless Locust run vs a running server: USERS= SPAWN_RATE= DURATION= HOST= P95_MS= (reports in build/loadtest)
	$(LOADTEST_TIMEOUT) $$(( $(LOADTEST_DURATION) + 240 )) $(LOADTEST_PYTHON) -m loadtest.run $(LOADTEST_COMMON) \
	  --users $(LOADTEST_USERS) --spawn-rate $(LOADTEST_RATE) --duration $(LOADTEST_DURATION) --name loadtest

loadtest-ui:  ## Locust web UI on http://127.0.0.1:8089, starts at once and stops after DURATION seconds
	$(LOADTEST_TIMEOUT) $$(( $(LOADTEST_DURATION) + 240 )) $(LOADTEST_PYTHON) -m locust -f loadtest/locustfile.py \
	  --host $(LOADTEST_HOST) --web-host 127.0.0.1 --grpc-port $(LOADTEST_GRPC_PORT) --http-port $(LOADTEST_HTTP_PORT) \
	  --users $(LOADTEST_USERS) --spawn-rate $(LOADTEST_RATE) --run-time $(LOADTEST_DURATION)s --autostart --autoquit 30 \
	  --max-run-seconds $$(( $(LOADTEST_DURATION) + 30 )) --csv $(LOADTEST_OUT)/ui --html $(LOADTEST_OUT)/ui.html

soak:  ## saturating load for DURATION (default 600) s; fails on any error or >5% RSS growth after warm-up
	$(LOADTEST_TIMEOUT) $$(( $(LOADTEST_SOAK_TIME) + 240 )) $(LOADTEST_PYTHON) -m loadtest.soak $(LOADTEST_COMMON) \
	  --users $(LOADTEST_SOAK_USERS) --spawn-rate $(LOADTEST_SOAK_RATE) --duration $(LOADTEST_SOAK_TIME) --name soak

overload:  ## open loop at FACTOR (default 2) x saturation for DURATION (default 60) s: back-pressure, memory, health
	$(LOADTEST_TIMEOUT) $$(( $(or $(DURATION),60) + 600 )) $(LOADTEST_PYTHON) -m loadtest.overload --host $(LOADTEST_HOST) \
	  --grpc-port $(LOADTEST_GRPC_PORT) --factor $(or $(FACTOR),2) --duration $(or $(DURATION),60) \
	  --out $(LOADTEST_OUT) $(LOADTEST_P95) $(LOADTEST_TOKENS)
