'use strict';

/**
 * Environment variable name constants for the API proxy provider adapters.
 *
 * Single source of truth: provider-env-constants.json
 * The TypeScript host re-exports from the same JSON via src/api-proxy-env-constants.ts.
 */
module.exports = require('./provider-env-constants.json');
