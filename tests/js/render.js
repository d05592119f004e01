// Render LaTeX with MathJax 3's TeX input, as tests/test_latex_render.py needs it.
//
// stdin: a JSON list of TeX strings (display math, without $$ delimiters).
// stdout: a JSON list, one object per input: {errors: [...], texts: [...], mathml, svg?}.
//   errors: the message of every <merror> (a TeX error or an undefined macro);
//   texts:  the text content of every token element (mi, mo, mn, mtext, ms), i.e. what
//           the reader sees, to check for literal backslashes and escapes.
// argv: "--svg" also returns the SVG of each input (to look at a rendering).
//
// Only the 'base' and 'ams' packages are loaded, and neither 'noerrors' nor 'noundefined':
// a formula that renders here renders in any MathJax 3 configuration (JupyterLab loads
// more packages, not fewer), and unknown macros or TeX errors are reported, not hidden.
'use strict';

const {mathjax} = require('mathjax-full/js/mathjax.js');
const {TeX} = require('mathjax-full/js/input/tex.js');
const {SVG} = require('mathjax-full/js/output/svg.js');
const {liteAdaptor} = require('mathjax-full/js/adaptors/liteAdaptor.js');
const {RegisterHTMLHandler} = require('mathjax-full/js/handlers/html.js');
const {SerializedMmlVisitor} = require('mathjax-full/js/core/MmlTree/SerializedMmlVisitor.js');
const {STATE} = require('mathjax-full/js/core/MathItem.js');
require('mathjax-full/js/input/tex/base/BaseConfiguration.js');
require('mathjax-full/js/input/tex/ams/AmsConfiguration.js');

const TOKENS = new Set(['mi', 'mo', 'mn', 'mtext', 'ms']);

function collect(node, errors, texts) {
  if (node.isKind('merror')) {
    errors.push(node.attributes.get('data-mjx-error') || textOf(node));
  }
  if (TOKENS.has(node.kind)) {
    texts.push(textOf(node));
  }
  for (const child of node.childNodes || []) {
    if (child && child.isKind) collect(child, errors, texts);
  }
}

function textOf(node) {
  if (node.isKind('text')) return node.getText();
  return (node.childNodes || []).map((c) => (c && c.isKind ? textOf(c) : '')).join('');
}

function main() {
  const wantSvg = process.argv.includes('--svg');
  const inputs = JSON.parse(require('fs').readFileSync(0, 'utf8'));
  const adaptor = liteAdaptor();
  RegisterHTMLHandler(adaptor);
  const tex = new TeX({packages: ['base', 'ams']});
  const svg = new SVG({fontCache: 'local'});
  const doc = mathjax.document('', {InputJax: tex, OutputJax: svg});
  const visitor = new SerializedMmlVisitor();
  const results = inputs.map((latex) => {
    const mml = doc.convert(latex, {display: true, end: STATE.COMPILED});
    const errors = [];
    const texts = [];
    collect(mml, errors, texts);
    const result = {errors, texts, mathml: visitor.visitTree(mml)};
    if (wantSvg) result.svg = adaptor.outerHTML(doc.convert(latex, {display: true}));
    return result;
  });
  process.stdout.write(JSON.stringify(results));
}

main();
