"""The console: users and roles, the audit trail, metric history, the dashboard (issue 20)."""
