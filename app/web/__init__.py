"""What the HTTP faces (app/api, app/ui) share: body reading, error statuses, the Host check,
the UI's cookies and the API key check."""
