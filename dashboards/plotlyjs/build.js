// Bundles entry.js the way plotly.js builds its own dist files (its esbuild-config.js), minified.
// Usage: node build.js OUTFILE
'use strict';

const esbuild = require('esbuild');
const { environmentPlugin } = require('esbuild-plugin-environment');
const { glsl } = require('esbuild-plugin-glsl');
const InlineCSSPlugin = require('esbuild-plugin-inline-css');
const path = require('path');

const version = require('plotly.js/package.json').version;
const banner =
    `/*! plotly.js v${version}, partial bundle for nasplat's dashboard ` +
    '(traces: scatter, scattergl, scatter3d, parcoords, heatmap, bar). ' +
    'Copyright 2012-2026, Plotly, Inc. Licensed under the MIT license. */';

esbuild
    .build({
        entryPoints: [path.join(__dirname, 'entry.js')],
        outfile: process.argv[2],
        format: 'iife',
        globalName: 'Plotly',
        bundle: true,
        minify: true,
        sourcemap: false,
        legalComments: 'eof',
        banner: { js: banner },
        plugins: [InlineCSSPlugin(), glsl({ minify: true }), environmentPlugin({ NODE_DEBUG: false })],
        alias: { regl: '@plotly/regl', stream: 'stream-browserify' },
        define: { global: 'window', 'define.amd': 'false' },
        target: 'es2016',
        logLevel: 'info'
    })
    .catch(() => process.exit(1));
