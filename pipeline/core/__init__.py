"""The ground floor: primitives every stage shares. Imports no stage package and nothing above it."""
