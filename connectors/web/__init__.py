"""HTTP endpoints, the dashboard, SVG charts and the Prometheus collectors."""
