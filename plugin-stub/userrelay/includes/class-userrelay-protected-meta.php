<?php
/**
 * Protected user meta: the one rule, shared with the relay (relay/protected_meta.py), saying
 * which meta keys may ever travel.
 *
 * A key is syncable only if every character is printable ASCII (0x21..0x7E: no spaces, no
 * control characters, nothing non-ASCII) and it is not protected. Why: MariaDB's utf8mb4
 * collations compare meta_key ignoring case, trailing spaces, accents and ignorable characters,
 * so "WP_CAPABILITIES", "wp_capabilities " and "wp_capabilitiés" all reach the real
 * wp_capabilities row. Within printable ASCII those collations differ from byte equality only by
 * case, so once a key is printable ASCII, comparing it in lowercase is exactly how the table
 * compares it.
 *
 * Protected, compared on the lowercased key: ends with "capabilities" or "user_level" (every
 * blog prefix of a network, e.g. wp_2_capabilities), "user-settings" or "user-settings-time",
 * "dashboard_quick_press_last_post_id"; equals "session_tokens" or "community-events-location";
 * starts with "_application_passwords" or "userrelay" (the plugin's own bookkeeping). The suffix
 * rules also block an odd plugin key that happens to end in "capabilities": accepted.
 *
 * Nothing here reads or writes the database.
 *
 * @package UserRelay
 */

if ( ! defined( 'ABSPATH' ) ) {
	exit;
}

// The shared facts this rule is made of; also loaded on its own by the relay's tests.
require_once __DIR__ . '/class-userrelay-facts.php';

/**
 * The protected meta rule.
 */
final class UserRelay_Protected_Meta {

	/**
	 * Why a meta key may not be synced, or null when it may.
	 *
	 * @param string $key A user meta key, as sent or stored.
	 */
	public static function problem( string $key ): ?string {
		if ( '' === $key ) {
			return 'meta key "" is empty';
		}
		if ( 1 !== preg_match( '/^[\x21-\x7E]+$/D', $key ) ) {
			return sprintf( 'meta key %s is not printable ASCII without spaces (the database would compare it with another key)', self::shown( $key ) );
		}
		$lower = strtolower( $key );
		foreach ( UserRelay_Facts::PROTECTED_META_SUFFIXES as $suffix ) {
			if ( substr( $lower, -strlen( $suffix ) ) === $suffix ) {
				return sprintf( 'meta key %s is protected (it ends with "%s")', self::shown( $key ), $suffix );
			}
		}
		if ( in_array( $lower, UserRelay_Facts::PROTECTED_META_EXACT, true ) ) {
			return sprintf( 'meta key %s is protected', self::shown( $key ) );
		}
		foreach ( UserRelay_Facts::PROTECTED_META_PREFIXES as $prefix ) {
			if ( 0 === strpos( $lower, $prefix ) ) {
				return sprintf( 'meta key %s is protected (it starts with "%s")', self::shown( $key ), $prefix );
			}
		}
		return null;
	}

	/**
	 * Whether a meta key may be synced (sent, written, digested).
	 *
	 * @param string $key A user meta key.
	 */
	public static function is_syncable( string $key ): bool {
		return null === self::problem( $key );
	}

	/**
	 * A key quoted for a message, with anything unprintable escaped (JSON style).
	 *
	 * @param string $key The key.
	 */
	private static function shown( string $key ): string {
		$json = wp_json_encode( $key );
		return false === $json ? '"' . bin2hex( $key ) . '" (hex)' : $json;
	}
}
