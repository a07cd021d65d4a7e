"""Tools for testing with vwo-heap-middleware: ``testing.gateway``, a local VWO gateway."""
