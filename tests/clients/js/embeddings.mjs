// Embeddings of two texts (the SDK asks for base64 and decodes it, as it does by default).
import OpenAI from 'openai';

const client = new OpenAI({ maxRetries: 0, timeout: 20_000 });

const result = await client.embeddings.create({ model: 'demo', input: ['first text', 'second'] });
console.log(`embeddings: ${result.data.length} of ${result.data[0].embedding.length}`);
console.log(`first: ${JSON.stringify(result.data[0].embedding)}`);
console.log(`usage: ${result.usage.prompt_tokens}`);
