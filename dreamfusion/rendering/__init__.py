"""What every scene representation renders with: cameras, lights and shading, the packed
volume-rendering maths, and the ``Rendered`` images they return."""
