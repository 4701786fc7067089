"""Pure ASGI middleware, one module each, listed in the order the public app runs them (app.py).
Most derive from base.HttpMiddleware: they act on HTTP requests and let other scopes through.

- unread_body: a body an early answer left unread is drained while the answer goes out
- response_headers: one layer for what every answer carries, from
  - request_id: `X-Request-ID` on every response
  - security_headers: nosniff everywhere, no-store on private answers, frame-ancestors on HTML
- internal_errors: the last-resort 500 in the envelope
- observe: metrics and the access log, by route template
- header_limits: too many headers or header bytes (431); then, in the same layer,
  - trailing_slash: `/messages/` is `/messages` (a layer of its own on the admin listener)
- cors: Starlette's, with a refused preflight in the envelope
- ratelimit: token buckets per client and the 429 before the app runs
"""
