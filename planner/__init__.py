"""The compiler: turns a query, an agent and a tool catalog into a validated plan."""

__all__: list[str] = []
