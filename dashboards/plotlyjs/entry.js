// plotly.js with only the trace types nasplat's dashboard draws (nasplat_dashboards.scripts.TRACE_TYPES)
'use strict';

var Plotly = require('plotly.js/lib/core');

Plotly.register([
    require('plotly.js/lib/scatter'),
    require('plotly.js/lib/scattergl'),
    require('plotly.js/lib/scatter3d'),
    require('plotly.js/lib/parcoords'),
    require('plotly.js/lib/heatmap'),
    require('plotly.js/lib/bar')
]);

module.exports = Plotly;
