"""Local stand-ins for the external services (Whereby, Kommo) used by tests, benchmarks and the dev stack."""
