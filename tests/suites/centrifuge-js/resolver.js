// Ours, not upstream's: resolves the suite's imports of its own source
// ('./centrifuge', './protobuf', './codes', './types', ...) to the released
// build the server is tested with, node_modules/centrifuge at the repository's
// root (npm centrifuge 5.7.4). Only imports made from src/ are mapped, never a
// dependency's own './types'.
const path = require('path');

const src = path.join(__dirname, 'src');
const build = path.join(__dirname, '..', '..', '..', 'node_modules', 'centrifuge', 'build');
const mapped = {
  './centrifuge': path.join(build, 'index.js'),
  './codes': path.join(build, 'index.js'),
  './types': path.join(build, 'index.js'),
  './subscription': path.join(build, 'index.js'),
  './protobuf': path.join(build, 'protobuf', 'index.js'),
};

module.exports = (request, options) => {
  if (options.basedir === src && Object.prototype.hasOwnProperty.call(mapped, request)) {
    return mapped[request];
  }
  return options.defaultResolver(request, options);
};
