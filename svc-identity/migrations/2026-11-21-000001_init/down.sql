DROP TABLE signing_keys;
DROP TABLE api_keys;
DROP TABLE refresh_tokens;
DROP TABLE memberships;
DROP TABLE organizations;
DROP TABLE user_roles;
DROP TABLE users;
