"""The SQL, one module per table group; synchronous functions and classes that
run inside a unit of work and never commit."""
