"""The transform stage: ``dbt build`` into the shadow schema, tests as gates, and the
publish that moves a green build into ``marts`` (`transform.build`, `transform.publish`,
`transform.audit`). It stands on the core (`tidewater`) and nothing else of the kit."""
