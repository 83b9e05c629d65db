"""Run inside Blender: import a GLB or OBJ into an empty scene and report what Blender sees.

usage: blender -b --factory-startup --python blender_import.py -- MODEL OUT.json
"""
import json
import sys

import bpy
from mathutils import Vector

try:
    import numpy
    # Debian's Blender 3.4 glTF importer still uses np.bool, which numpy 1.24 removed
    if "bool" not in numpy.__dict__:
        numpy.bool = bool
except ImportError:
    pass

model, out = sys.argv[sys.argv.index("--") + 1:][:2]
bpy.ops.wm.read_factory_settings(use_empty=True)
if model.endswith(".glb"):
    bpy.ops.import_scene.gltf(filepath=model)
else:
    bpy.ops.wm.obj_import(filepath=model)
meshes = [o for o in bpy.context.scene.objects if o.type == "MESH"]
corners = [o.matrix_world @ Vector(c) for o in meshes for c in o.bound_box]
textures = []
for o in meshes:
    for slot in o.material_slots:
        if slot.material and slot.material.use_nodes:
            textures += [n.image.name for n in slot.material.node_tree.nodes
                         if n.type == "TEX_IMAGE" and n.image is not None]
report = {
    "objects": len(meshes),
    "vertices": sum(len(o.data.vertices) for o in meshes),
    "faces": sum(len(o.data.polygons) for o in meshes),
    "uv_layers": sum(len(o.data.uv_layers) for o in meshes),
    "textures": textures,
    "bbox_min": [min(c[i] for c in corners) for i in range(3)],
    "bbox_max": [max(c[i] for c in corners) for i in range(3)],
}
with open(out, "w") as f:
    json.dump(report, f)
