"""Pure ASGI middleware, one module each, listed in the order the public app runs them (app.py).

- request_id: `X-Request-ID` on every response
- internal_errors: the last-resort 500 in the envelope
- observe: metrics and the access log, by route template
- framing: header limits (431), draining an unread body, trailing slashes
- ratelimit: token buckets per client and the 429 before the app runs
"""
