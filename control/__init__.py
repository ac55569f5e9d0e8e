"""The application layer: the chain (load → transform), warehouse setup, the command
line (`tidewater …`, `python -m control …`), status, report and graph. It may import
every stage (`loaders`, `transform`, `roles`, `demo_app`) and the core (`tidewater`);
nothing imports it."""
