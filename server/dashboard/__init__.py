"""The staff dashboard, served by the HTTP API at / (server-rendered HTML and SVG, no CDN)."""
