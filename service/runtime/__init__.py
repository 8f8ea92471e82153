"""The process's own machinery: settings read once from the environment, JSON logging, the
Prometheus metrics, and the serving process's GC tuning. Imports only the shared vocabulary;
every layer above may use it."""
