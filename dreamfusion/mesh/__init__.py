"""The mesh stage (Magic3D's second stage): a deformable tetrahedral SDF grid (DMTet),
marched to a triangle mesh every step, rasterised (``rendering.mesh_raster``) and coloured by
a hash-grid field."""
