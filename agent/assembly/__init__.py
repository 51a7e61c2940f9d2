"""Run assembly: processes -> runs and steps, file events -> attributed versions."""
