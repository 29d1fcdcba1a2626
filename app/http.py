"""What the HTTP faces (api/ and ui/) share: the status each kind of core error answers with."""

from __future__ import annotations

STATUS_FOR_KIND = {"invalid": 422, "malformed": 400, "conflict": 409, "not_found": 404, "too_large": 413}
