"""Helpers shared by the integration and fault tests (not tests themselves), imported as tests.support.*."""
