"""One router per resource: `ops` (health, readiness, admin reload), `recommendations`,
`price_suggestions`."""
