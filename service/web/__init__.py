"""The web layer: the app factory, the route table, middleware, authentication and the request
plumbing (bodies, responses, conditional requests, paging), with one handler module per area in
`handlers/`. A request enters here and leaves here; handlers turn it into calls on the layers
below (an adapter, the catalog writes, the enrichment core, the resolver, the data functions) and
never hold SQL. May import every layer below it; nothing below imports it. A new route: a handler
in `handlers/`, a line in `routes.py`, an operation in `openapi.json`. (Not named `http`: that
would shadow the standard library's wherever `service/` itself is on the path, as when the Lambda
shim runs on its own.)"""
