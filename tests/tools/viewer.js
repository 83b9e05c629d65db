// The camera looks at the object from its front, our world's +X, with our world's up on
// screen: glTF is Y-up (our +X is its +Z), the 3DGS PLY keeps our Z-up world as it is.
import * as THREE from "three";

const params = new URLSearchParams(location.search);
const SIZE = 256;
const distance = Number(params.get("distance"));
const renderer = new THREE.WebGLRenderer({ antialias: false, preserveDrawingBuffer: true });
renderer.setPixelRatio(1);
renderer.setSize(SIZE, SIZE);
renderer.setClearColor(0x000000, 1);
document.body.appendChild(renderer.domElement);
const scene = new THREE.Scene();
const camera = new THREE.PerspectiveCamera(40, 1, 0.05, 50);

async function frames(n) {
  for (let i = 0; i < n; i++) {
    renderer.render(scene, camera);
    await new Promise((resolve) => requestAnimationFrame(resolve));
  }
}

async function show() {
  if (params.get("kind") === "glb") {
    const { GLTFLoader } = await import("three/addons/loaders/GLTFLoader.js");
    const gltf = await new GLTFLoader().loadAsync(params.get("file"));
    scene.add(gltf.scene);
    // ambient light alone, of pi: three.js divides a Lambertian BRDF by pi, so a surface
    // then shows its base colour as it is
    scene.add(new THREE.AmbientLight(0xffffff, Math.PI));
    camera.position.set(0, 0, distance);
  } else {
    const { SparkRenderer, SplatMesh } = await import("@sparkjsdev/spark");
    scene.add(new SparkRenderer({ renderer }));
    const splats = new SplatMesh({ url: params.get("file") });
    await splats.initialized;
    scene.add(splats);
    camera.up.set(0, 0, 1);
    camera.position.set(distance, 0, 0);
  }
  camera.lookAt(0, 0, 0);
  await frames(20);      // Spark sorts its splats between frames
}

show().then(() => { window.viewerDone = true; },
            (e) => { window.viewerError = String((e && e.stack) || e); });
