"""Testing migrations: the stairway and its checks as a library, and the pytest plugin's runner.

``runner`` applies, rolls back and compares schemas with no knowledge of
pytest, so the same checks can run from a script or another test framework;
``planner.pytest_plugin`` turns them into generated test items and fixtures.
Nothing is imported here: the plugin module is loaded by every pytest run on
a machine with apm-migrate installed, and must stay cheap until switched on.
"""
