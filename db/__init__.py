"""The service database: tables, entities, queries and migrations. Below `training` and
`serving`, above `models`."""
