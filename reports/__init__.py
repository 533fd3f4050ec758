"""The report generator: the run store read into pandas (`runs`, `table`), paired bootstrap intervals
(`stats`), figures (`plots`), and the static report folder (`report`: index.html, index.md, CSV, PNG,
per-item pages through `html` and `markdown`)."""
