"""Load, soak and SLO tooling for the T5 QA server (Locust users over the project's client).

  python -m loadtest.run --help    headless load test with reports and an SLO gate (make loadtest)
  python -m loadtest.soak --help   saturating load with a server memory record (make soak)
"""
