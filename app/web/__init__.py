"""What the HTTP faces (app/api, app/ui) share: body reading, error statuses, the Host check,
the UI's cookies, the API key check, and the typed state they read of the running app."""
